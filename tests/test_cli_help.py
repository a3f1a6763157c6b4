"""CLI help: every argument says what it is (and its default), every command has an example;
`--output` everywhere (submit keeps `--out` as a hidden alias)."""

from __future__ import annotations

import argparse

from occlutrace_compute.cli import build_parser


def _commands():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices


def test_every_argument_has_help_and_every_command_an_example() -> None:
    for name, p in _commands().items():
        assert p.epilog and "example:" in p.epilog and f"occlutrace {name}" in p.epilog, name
        for a in p._actions:
            if a.help == argparse.SUPPRESS:
                continue
            assert a.help, f"{name} {a.option_strings or a.dest} has no help"
            if a.option_strings and a.default not in (None, False, [], argparse.SUPPRESS):
                assert "default" in a.help, f"{name} {a.option_strings} does not say its default"


def test_output_spelling_is_the_same_everywhere() -> None:
    for name, p in _commands().items():
        flags = {f for a in p._actions for f in a.option_strings if a.help != argparse.SUPPRESS}
        if name in ("align", "bite", "batch", "sanitize", "submit"):
            assert "--output" in flags, name
        assert "--out" not in flags, name
    parser = build_parser()
    common = ["submit", "cases", "--server", "http://x", "--token-file", "t"]
    assert str(parser.parse_args(common + ["--out", "o1"]).output) == "o1"
    assert str(parser.parse_args(common + ["--output", "o2"]).output) == "o2"
    assert str(parser.parse_args(common).output) == "occlutrace-results"


def test_batch_help_documents_the_case_layout_and_options() -> None:
    text = _commands()["batch"].format_help()
    for word in ("UpperJaw", "mandible", "BuccalBite", "rescan", "case.json", "--force", "--tolerance", "--band"):
        assert word in text
    args = build_parser().parse_args(
        ["batch", "d", "-o", "o", "--tolerance", "0.1", "--color-scale", "0.5", "--settle"]
    )
    from occlutrace_compute.cli_jobs import options_from_args

    opts = options_from_args(args)
    assert (opts.tolerance_mm, opts.color_scale_mm, opts.settle) == (0.1, 0.5, True)


def test_option_defaults_and_choices_come_from_job_options(monkeypatch) -> None:
    """The job flags carry JobOptions' defaults and allowed values, not copies: no flags give
    JobOptions(), and a default changed in JobOptions is the CLI's default too."""
    from occlutrace_compute import cli_jobs
    from occlutrace_compute.jobs.models import JobOptions

    commands = (
        ["align", "f", "m", "-o", "o"],
        ["bite", "--upper", "u", "--lower", "l", "--bite", "b", "-o", "o"],
        ["batch", "d", "-o", "o"],
    )
    for argv in commands:
        assert cli_jobs.options_from_args(build_parser().parse_args(argv)) == JobOptions(), argv
    align = _commands()["align"]
    choices = {a.dest: a.choices for a in align._actions if a.choices}
    assert (set(choices["device"]), set(choices["arch"])) == ({"auto", "cpu", "cuda"}, {"upper", "lower"})

    changed = JobOptions(device="cpu", tolerance_mm=0.07, arch="lower")
    monkeypatch.setattr(cli_jobs, "_defaults", lambda: changed)
    for argv in commands:
        assert cli_jobs.options_from_args(build_parser().parse_args(argv)).device == "cpu", argv
    for argv in (commands[0], commands[2]):  # the pair flags (bite has no --tolerance or --arch)
        opts = cli_jobs.options_from_args(build_parser().parse_args(argv))
        assert (opts.tolerance_mm, opts.arch) == (0.07, "lower"), argv
