"""Running keyhealth on one machine: simulators, demo keys, local runner."""
