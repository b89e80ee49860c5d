"""AWS implementations of the ports (DynamoDB, Secrets Manager, SNS). Clients are injected."""
