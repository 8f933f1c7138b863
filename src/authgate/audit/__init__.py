"""The audit ledger. For now: the event record and the sink protocol the hot path writes to;
the durable Merkle log arrives with the ledger issue."""
