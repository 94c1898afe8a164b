"""How evidence reaches the verifier: the agent's JSON format, host agents, charm actions."""
