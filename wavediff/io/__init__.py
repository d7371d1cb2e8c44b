"""Audio in and out (decode, encode, resample, loudness, WAV loop chunks) and atomic files: the bottom layer."""
