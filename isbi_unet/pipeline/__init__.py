"""The protocol run end to end: train, choose on the selection slices, score the test slices once; k-fold."""
