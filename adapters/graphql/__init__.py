"""GraphQL family: ``graphql`` (outbound, a mutation per event) and ``graphql_poll`` (inbound, a
query's Relay cursor connection polled on an interval)."""
