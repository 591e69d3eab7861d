"""Machine-specific fast paths for the model's operations, kept apart from the paper's maths in
:mod:`deblur_cli.models`, each with its reference form beside it for tests: the pixel-dependent
filtering of Eq. 11 (``pixel_filter``, its CPU inference form in ``row_gather``), the
attention's Eq. 9 mixing (``attention``), and what they decide from (``cpu``: CPU vendor,
inference or not, autocast, oneDNN or MKL products)."""
