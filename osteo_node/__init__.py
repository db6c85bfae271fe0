"""osteo-node: opportunistic osteoporosis and vertebral fracture screening DICOM node.

Results are decision support for qualified clinicians, not a diagnosis.
"""

__version__ = "0.1.0"
DISCLAIMER = (
    "Decision support only, not a diagnosis. "
    "Results must be reviewed by a qualified clinician."
)
