"""Repair the kept weights of a pruned config from calibration activations, without training:
which linear maps can be refit (targets), their input statistics and the least-squares refit.
Named ``reconstruction`` so that ``nasframe.reconstruct`` stays the public function."""
