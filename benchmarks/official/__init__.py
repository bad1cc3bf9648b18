"""Side-by-side comparisons with the authors' released code (driven by ``benchmarks/vs_official.py``).

One module per family of recipes; each registers its comparisons with :func:`common.recipe`.
Nothing of the authors' code lives here: every comparison imports it at run time from a checkout
the user passes (``--maple-repo DIR`` ...), see :func:`common.checkout_on_path`.
"""
