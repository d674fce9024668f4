"""Pure policy: facts in, a decision with its reason out.  No IO, no event loop."""
