"""What an audit and a comparison found, as the report writers read it."""
