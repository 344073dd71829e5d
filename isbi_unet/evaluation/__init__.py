"""The ISBI 2012 challenge's metric (border thinning, foreground-restricted V_rand and V_info), and scoring folders, stacks and runs."""
