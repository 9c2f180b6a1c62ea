"""What a sweep is, before anything runs: the lowest layer, importing only ``architectures``, the vocabulary
and the errors.

``params`` the trainer's params (type, default, range, units) · ``sweep`` sweeps, trials and their keys,
``load_sweep`` · ``validation``, ``grid_validation`` and ``document`` reading a sweep file, with errors naming
its lines · ``halving`` the successive-halving schedule · ``sampling`` the distributions and
drawn points of random and sobol search · ``config`` a trial's resolved config · ``usercode`` the user's own
code a sweep names (``package.module:name``).
"""
