/* cli_upload: `tagproof upload --batch ID FILE.csv` (SPEC §7), the CSV upload with progress. */
#ifndef TAGPROOF_CLI_UPLOAD_H
#define TAGPROOF_CLI_UPLOAD_H

/* argv[0] is "upload"; returns the exit code. */
int cli_upload(int argc, char **argv);

#endif
