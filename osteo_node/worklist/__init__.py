"""Fracture liaison service (FLS) worklist: rows for positive results, status changes, CSV and
FHIR R4 exports.

- :func:`osteo_node.worklist.store.add_from_result` (idempotent per study/series),
  :func:`~osteo_node.worklist.store.set_status`, :func:`~osteo_node.worklist.store.list_rows`
- :func:`osteo_node.worklist.export_csv.to_csv` / ``parse_csv``
- :func:`osteo_node.worklist.fhir.to_bundle` / ``bundle_json`` / ``parse_bundle``
Rules (who gets a row) in ``dicom_sr_templates/fls_worklist.yaml``.
"""
