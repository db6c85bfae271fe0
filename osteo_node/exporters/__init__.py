"""DICOM and FHIR-facing exporters: SR TID 1500, SEG, secondary capture and KOS.

Entry point: :func:`osteo_node.exporters.publish.build_objects` (and ``write_objects``). Codes
live as data in ``dicom_sr_templates/codes.yaml`` (:mod:`osteo_node.exporters.codes`).
"""
