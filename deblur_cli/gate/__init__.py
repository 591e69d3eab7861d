"""The blur gate: a small network that measures motion blur in pixels, and the rule that
decides, per image or per region, whether and how much of the deblurred result to keep."""
