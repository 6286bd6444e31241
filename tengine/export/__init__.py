"""The export bundle (issue 11), in progress: the pieces built so far, not yet wired to a
command. `runtime` (the bundle's standalone inference.py), `formats` (safetensors, pt2, onnx,
torchscript builders), `source` (run / checkpoint / artifact / registry version → a verified
artifact), `parity` (real-batch cases, isolated `python -I` runs, comparison, table).
`tengine export` itself does not exist yet.
"""
