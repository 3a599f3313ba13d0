"""OAuth2 authorization-code connections: the consent flow (``bus auth login``), the encrypted
token store, and the refresher that keeps each connection's access token fresh."""
