"""Reading FHIR R4 resources into a :class:`~osteo_node.clinical.record.ClinicalRecord`.

``datatypes`` reads FHIR data types; ``patient``, ``condition``, ``medication`` and
``observation`` map one resource each; ``to_record`` maps a list of resources; ``server`` reads
one patient's resources from a FHIR server. The entry points are in
:mod:`osteo_node.clinical.fhir_intake`.
"""
