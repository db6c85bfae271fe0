"""Sagittal spine MR analysis (issue 4).

select/sequence: which series (sagittal, T1/T2/STIR recognised); orient: canonical [LR, SI, AP]
view; model/infer: ONNX 2D body probability; instances: separate, ordered bodies; levels: L5
anchor above the sacrum or relative V1..Vn; heights: the shared CT height code; analyser: the
registered ``MRAnalyser`` (same JSON schema as CT, no HU); evaluate: scores against manual masks.
"""
