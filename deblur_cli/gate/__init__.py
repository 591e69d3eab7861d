"""The blur gate: a small network that measures motion blur in pixels (``meter``, its weights in
``weights``), per photograph or per region (``regions``), and the rule that decides whether and
how much of the deblurred result to keep (``decision``)."""
