"""Converters: one module per source format (mat, dlc, mpii, coco), the shared checks (common) and synth."""
