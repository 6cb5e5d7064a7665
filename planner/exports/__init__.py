"""Schedule exports to the runtimes that execute them, and imports back (docs/exports.md).

- `msccl-xml`: MSCCL algorithm XML as the microsoft/msccl NCCL fork loads it;
- `msccl-exec-xml`: the same XML in the dialect of msccl-executor-nccl and RCCL;
- `mscclpp-json`: an MSCCL++ execution plan.
"""
from planner.exports.msccl_check import check_msccl_xml
from planner.exports.msccl_xml import export_msccl_xml, import_msccl_xml
from planner.exports.mscclpp_json import export_mscclpp_json, import_mscclpp_json
from planner.exports.roundtrip import FORMATS, ExportMismatch, export_text, import_text, movement, round_trip

__all__ = ["FORMATS", "ExportMismatch", "check_msccl_xml", "export_msccl_xml", "export_mscclpp_json", "export_text",
           "import_msccl_xml", "import_mscclpp_json", "import_text", "movement", "round_trip"]
