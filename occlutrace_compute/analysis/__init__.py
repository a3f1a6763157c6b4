"""What a technician looks at after alignment: deviation maps, occlusal contacts, reports.

Works on in-memory `Mesh` arrays; writes only the output paths it is given.
"""

from occlutrace_compute.analysis.contacts import ContactReport, contacts
from occlutrace_compute.analysis.deviation import DeviationReport, deviation
from occlutrace_compute.analysis.distance import SurfaceDistance, SurfaceIndex, signed_distance
from occlutrace_compute.analysis.report import write_batch_report

__all__ = [
    "ContactReport",
    "DeviationReport",
    "SurfaceDistance",
    "SurfaceIndex",
    "contacts",
    "deviation",
    "signed_distance",
    "write_batch_report",
]
