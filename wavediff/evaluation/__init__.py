"""Judging models and loops: reconstruction, tempo and seam, set distances, the eval suite, its table and pictures."""
