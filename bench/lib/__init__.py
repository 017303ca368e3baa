"""What every benchmark shares: report, measure, meters, procs, stack, topics, tenants, cli, host, rawhttp."""
