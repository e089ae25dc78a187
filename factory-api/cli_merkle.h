/* cli_merkle: `tagproof merkle ...` (SPEC §7), the RFC 9162 tools for interoperability tests. */
#ifndef TAGPROOF_CLI_MERKLE_H
#define TAGPROOF_CLI_MERKLE_H

/* argv[0] is "merkle"; returns the exit code. */
int cli_merkle(int argc, char **argv);

#endif
