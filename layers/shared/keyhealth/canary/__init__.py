"""The egress canary: each exchange's public time endpoint, asked from every egress IP."""
