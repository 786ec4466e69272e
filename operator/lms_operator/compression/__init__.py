"""Model compression: load, prune, distil, export to ONNX, quantize, gate and publish.

Runs inside the compression Job (and `lms serve` locally); the operator process never
imports this package's heavy modules.
"""
