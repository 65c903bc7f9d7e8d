"""The search loop every algorithm shares, its allocation strategies, score normalisation and
the checkpoint. Named ``searchers`` so that ``nasframe.search`` stays the public function."""
