/* cli_verify: `tagproof verify BUNDLE.json --key VKEY [--ledger-url URL]` (SPEC §7). */
#ifndef TAGPROOF_CLI_VERIFY_H
#define TAGPROOF_CLI_VERIFY_H

/*
 * argv[0] is "verify". Prints each check; returns 0 when all pass, 1 when any fails, 2 on a
 * usage error or a bundle or key that cannot be read.
 */
int cli_verify(int argc, char **argv);

#endif
