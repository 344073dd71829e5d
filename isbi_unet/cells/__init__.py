"""Cells: instance segmentation of membrane maps (threshold, watershed, multicut, GASP, learned multicut, mutex watershed)."""
