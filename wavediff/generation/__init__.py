"""Turning noise into loops: samplers, loop shaping (exact bars, circular), generate/vary/inpaint, saving."""
