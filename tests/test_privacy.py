"""Identifier detection: every kind, the allow patterns, messages, file names, lab vocabulary."""

from __future__ import annotations

import pytest

from occlutrace_compute.errors import InputRejected
from occlutrace_compute.privacy import (
    Finding,
    check_filename,
    ensure_anonymous,
    filename_stem,
    find_identifiers,
    find_in_filename,
)


def kinds(text: str, allow: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    return [(f.kind, f.text) for f in find_identifiers(text, allow)]


ANONYMOUS = [
    "case-0017",
    "LAB-2024-00017",
    "WO-88123",
    "A17-upper",
    "upper",
    "lower",
    "bite_left",
    "scan_2",
    "prep-36",
    "crown_46",
    "batch-7/case-0012",
    "maxilla",
    "mandible",
    "buccal bite right",
    "rescan",
    "implant_36",
    "bridge_11-12-13",
    "arch",
    "tooth 46",
    "Upper_Arch_Final",
    "OK_UK_Biss",
    "Will_upper",
    "May_lower",
    "mark_margin_upper",
    "iTero_export_upper",
    "ScanBody_36",
    "szczęka_górna",
    "mâchoire_supérieure",
    "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
    "v2.1.24_lower",
    "2024_Q3_batch12",
    "Exported by 3Shape Dental System 2.21.0.0",
    "Emergency_Repair_11",
    "scan 2 via Trios 5",
]


@pytest.mark.parametrize("label", ANONYMOUS)
def test_anonymous_lab_labels_pass(label: str) -> None:
    assert find_identifiers(label) == []
    ensure_anonymous(label, "case label")  # does not raise


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("Smith_John_upper", "Smith_John"),
        ("mueller juergen OK", "mueller juergen"),
        ("Müller_Jürgen", "Müller_Jürgen"),
        ("José García upper", "José García"),
        ("GARCIA, Jose - lower", "GARCIA, Jose"),
        ("J. Smith bite", "J. Smith"),
        ("SmithJohn_bite", "SmithJohn"),
        ("McDonald_upper", "McDonald"),
        ("Ludwig van Beethoven", "Ludwig van Beethoven"),
        ("Wang_Wei_upper", "Wang_Wei"),
        ("Tanaka Hiroshi bite", "Tanaka Hiroshi"),
        ("Priya Sharma lower", "Priya Sharma"),
        ("Yılmaz_Mehmet", "Yılmaz_Mehmet"),
        ("Mohammed Al-Sayed lower", "Mohammed Al-Sayed"),
        ("Łukasz Nowak UK", "Łukasz Nowak"),
        ("Dr_Kovacs_upper", "Dr_Kovacs"),
        ("Patient: Nagy Bence", "Patient: Nagy Bence"),
    ],
)
def test_names_from_lists_and_patterns(text: str, part: str) -> None:
    assert ("name", part) in kinds(text)


def test_unlisted_names_caught_by_shape() -> None:
    # None of these words is in the shipped lists: the Lastname_Firstname shape and the
    # non-English, capitalised words give them away.
    assert kinds("Dvořák_Antonín_lower") == [("name", "Dvořák_Antonín")]
    assert kinds("Radolovic Madini crown_46") == [("name", "Radolovic Madini")]
    assert kinds("K. Iswahyudi bovenkaak") == [("name", "K. Iswahyudi")]


def test_lowercase_english_word_names_need_capitals_or_company() -> None:
    assert kinds("brown_upper") == []
    assert kinds("Brown_upper") == [("name", "Brown")]
    assert kinds("brown john upper") == [("name", "brown john")]


@pytest.mark.parametrize(
    "date",
    [
        "1972-03-04",
        "04.03.1972",
        "3/4/72",
        "19720304",
        "04031972",
        "4 March 1972",
        "March 4, 1972",
        "4. März 1972",
        "4 mars 1972",
        "4 de marzo de 1972",
        "04-Mar-1972",
        "4Mar72",
        "12th March 1965",
        "20240517_143012",
    ],
)
def test_dates(date: str) -> None:
    assert kinds(f"upper {date} scan") == [("date", date)]


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("DOB 1972 upper", "DOB 1972"),
        ("dob_03-04-72", "dob_03-04-72"),
        ("geb. 04.03.1972", "geb. 04.03.1972"),
        ("né le 4/3/1972", "4/3/1972"),
        ("born 1965-03-12", "born 1965-03-12"),
    ],
)
def test_birth_markers(text: str, part: str) -> None:
    found = find_identifiers(text)
    assert [(f.kind, f.text) for f in found] == [("date", part)]


def test_impossible_and_future_dates_are_not_dates() -> None:
    assert kinds("scan 2019-02-30") == []
    assert kinds("LAB 2999-01-01") == []


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("MRN 0012345 upper", "MRN 0012345"),
        ("chart#12345", "chart#12345"),
        ("Pat 0012345 UK", "Pat 0012345"),
        ("PID-998877", "PID-998877"),
        ("Akte 20931", "Akte 20931"),
        ("upper_88123456", "88123456"),
        ("123456_bite", "123456"),
    ],
)
def test_record_numbers(text: str, part: str) -> None:
    assert kinds(text) == [("mrn", part)]


def test_short_lab_numbers_are_not_record_numbers() -> None:
    assert kinds("case 12345") == []
    assert kinds("WO-88123") == []


@pytest.mark.parametrize(
    ("text", "part"),
    [
        ("123-45-6789 upper", "123-45-6789"),
        ("SSN 123456789", "SSN 123456789"),
        ("RSSMRA72C04H501X_upper", "RSSMRA72C04H501X"),
        ("720304-1234_UK", "720304-1234"),
        ("AB123456C_lower", "AB123456C"),
        ("943 476 5919", "943 476 5919"),
        ("44051401458", "44051401458"),
    ],
)
def test_national_ids(text: str, part: str) -> None:
    assert kinds(text) == [("ssn", part)]


@pytest.mark.parametrize(
    ("text", "scheme"),
    [
        ("upper_111222333", "Dutch BSN"),
        ("12345678Z_lower", "Spanish DNI/NIE"),
        ("1 72 03 75 123 456 78", "French NIR"),
        ("720304-1234", "Nordic personal number"),
        ("RSSMRA72C04H501X", "Italian codice fiscale"),
    ],
)
def test_national_id_messages_name_the_scheme(text: str, scheme: str) -> None:
    [finding] = find_identifiers(text)
    assert finding.kind == "ssn" and scheme in finding.message


def test_invalid_ssn_shapes_are_not_ssns() -> None:
    assert [k for k, _ in kinds("000-12-3456")] != ["ssn"]
    assert [k for k, _ in kinds("666-12-3456")] != ["ssn"]


@pytest.mark.parametrize(
    "phone",
    [
        "+49 30 1234567",
        "+49 (0)171 2345678",
        "(555) 123-4567",
        "555-123-4567",
        "+44 20 7946 0958",
        "030/1234567",
        "06 12 34 56 78",
        "0049 89 12345678",
        "+1 415 555 0132",
    ],
)
def test_phones(phone: str) -> None:
    assert kinds(f"upper {phone}") == [("phone", phone)]


def test_phone_after_marker() -> None:
    assert kinds("tel 0301234567") == [("phone", "tel 0301234567")]


@pytest.mark.parametrize("email", ["john.smith@example.com", "j.doe@gmail.com", "mueller.j@t-online.de"])
def test_emails(email: str) -> None:
    assert kinds(f"upper {email} scan") == [("email", email)]


@pytest.mark.parametrize(
    "address",
    [
        "12 Main Street",
        "221B Baker St",
        "Hauptstraße 5",
        "Hauptstr. 12",
        "Berliner Str. 12",
        "Kerkstraat 12a",
        "12 rue de la Paix",
        "Calle Mayor 5",
        "Via Roma 10",
        "Rua Augusta 25",
        "ul. Marszałkowska 10",
        "Atatürk Cad. No: 5",
        "Storgatan 5",
        "Vesterbrogade 3",
        "45 Elm Road",
    ],
)
def test_addresses(address: str) -> None:
    assert kinds(f"{address} upper") == [("address", address)]


def test_underscored_address_in_file_name() -> None:
    assert kinds("Smith_John_12_Main_Street_upper") == [("name", "Smith_John"), ("address", "12_Main_Street")]


def test_several_kinds_in_reading_order() -> None:
    text = "Patient Smith John, born 4 March 1972, 12 Main Street, john.smith@example.com"
    assert [f.kind for f in find_identifiers(text)] == ["name", "date", "address", "email"]


def test_message_names_the_part() -> None:
    [finding] = find_identifiers("Smith_John_upper")
    assert finding == Finding("name", "Smith_John", "'Smith_John' looks like a personal name (Lastname_Firstname)")
    [finding] = find_identifiers("Jose Garcia lower")
    assert finding.message == "'Jose Garcia' looks like a personal name (Firstname Lastname)"
    [finding] = find_identifiers("upper_1972-03-04")
    assert finding.message == "'1972-03-04' looks like a date (possible birth date)"


def test_ensure_anonymous_raises_input_rejected_naming_source_and_parts() -> None:
    with pytest.raises(InputRejected) as err:
        ensure_anonymous("Smith_John_1972-03-04", "case label 'Smith_John_1972-03-04'")
    assert err.value.source == "case label 'Smith_John_1972-03-04'"
    assert "'Smith_John' looks like a personal name" in err.value.problem
    assert "'1972-03-04' looks like a date" in err.value.problem
    assert str(err.value).startswith("case label 'Smith_John_1972-03-04': ")


def test_allow_pattern_exempts_the_lab_scheme() -> None:
    label = "LAB-2024-12345678_upper"
    assert kinds(label) == [("mrn", "12345678")]
    assert kinds(label, allow=(r"LAB-\d{4}-\d{8}",)) == []
    ensure_anonymous(label, "case label", allow=[r"LAB-\d{4}-\d{8}"])


def test_allow_pattern_must_match_a_whole_part() -> None:
    # Matching only inside a part ("1234" within "12345678") exempts nothing.
    assert kinds("LAB-2024-12345678", allow=(r"\d{4}",)) == [("mrn", "12345678")]
    # The allowed part is exempt, the rest of the label is still checked.
    assert kinds("LAB-2024-12345678_Smith_John", allow=(r"LAB-\d{4}-\d{8}",)) == [("name", "Smith_John")]


def test_allow_pattern_matching_the_whole_label() -> None:
    assert kinds("Rossi Mario", allow=(r"Rossi Mario",)) == []


def test_invalid_allow_pattern_is_input_rejected() -> None:
    with pytest.raises(InputRejected, match="allow pattern: '\\(unclosed' is not a valid regular expression"):
        find_identifiers("upper", allow=("(unclosed",))


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("Smith_John_upper.stl", "Smith_John_upper"),
        ("scan.ply.gz", "scan"),
        ("upper", "upper"),
        ("case-0017.v2.STL", "case-0017.v2"),
    ],
)
def test_filename_stem(name: str, stem: str) -> None:
    assert filename_stem(name) == stem


def test_check_filename() -> None:
    check_filename("case-0017_upper.stl")
    check_filename("LAB-2024-00017/bite_left.PLY")
    with pytest.raises(InputRejected) as err:
        check_filename("Smith_John_1972-03-04_upper.stl")
    assert err.value.source == "Smith_John_1972-03-04_upper.stl"
    assert "'Smith_John'" in err.value.problem and "'1972-03-04'" in err.value.problem
    assert [f.kind for f in find_in_filename("Pat 0012345 UK.obj")] == ["mrn"]
    assert [f.kind for f in find_in_filename("john.smith@example.com")] == ["email"]


def test_empty_and_long_texts() -> None:
    assert find_identifiers("") == []
    long_text = " ".join(["comment upper arch scan"] * 2000) + " Smith_John"
    assert kinds(long_text) == [("name", "Smith_John")]
