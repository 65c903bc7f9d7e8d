"""Where the job's calibration tokens come from: the text, the model itself, or both."""
