"""The SMART launch: views, launch state, EHR connections, resume, visit memory, roles, revocation, retention."""
