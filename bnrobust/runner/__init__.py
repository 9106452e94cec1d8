"""Running sweeps: the plan, the run store, device choice and the sweep loop."""
