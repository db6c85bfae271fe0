from __future__ import annotations

from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from osteo_node.node.filemeta import encode_file_meta


def test_same_bytes_as_pydicom() -> None:
    for sop, ae in (("1.2.3.4", "STORESCU"), ("1.2.3.45", "ODD"), ("1.2.3.45", "")):
        meta = FileMetaDataset()
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
        meta.ImplementationClassUID = PYNETDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = PYNETDICOM_IMPLEMENTATION_VERSION
        if ae:
            meta.SourceApplicationEntityTitle = ae
        fp = DicomBytesIO()
        write_file_meta_info(fp, meta, enforce_standard=True)
        assert encode_file_meta("1.2.840.10008.5.1.4.1.1.2", sop, "1.2.840.10008.1.2.4.90",
                                ae) == b"DICM" + fp.getvalue()
