"""Patient-identifier detection for case labels, file names and mesh metadata text.

Only de-identified meshes and anonymous case labels may come in: `ensure_anonymous` and
`check_filename` reject anything that looks like a name, date, record number, national ID, phone
number, e-mail or street address, naming the part; a lab's allow patterns exempt its own scheme.
"""

from occlutrace_compute.privacy.detect import (
    check_filename,
    ensure_anonymous,
    filename_stem,
    find_identifiers,
    find_in_filename,
)
from occlutrace_compute.privacy.finding import KINDS, Finding

__all__ = [
    "KINDS",
    "Finding",
    "check_filename",
    "ensure_anonymous",
    "filename_stem",
    "find_identifiers",
    "find_in_filename",
]
