// fuzz: MODULES proof
/*
 * fuzz_bundle: the proof bundle parser (what POST /v1/proofs/verify and `tagproof verify` read
 * from outside) on arbitrary bytes. Whatever the input: no crash, no leak; a bundle that parses
 * is written back to JSON that parses to the same JSON; reasons and check details are UTF-8;
 * its checks run against the key of the seeds (Ed25519 seed 0x01..0x20), and one that passes
 * them all names a leaf inside its tree; the plan of its inclusion proof stays within bounds.
 */
#include "proof.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct merkle_hasher *hasher;
static struct note_signer *signer;
static struct proof_nodes nodes;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proof_check checks[PROOF_CHECK_COUNT];
    char err[256];
    int not_json = -1;

    if (hasher == NULL) {
        uint8_t seed[32];
        for (int i = 0; i < 32; i++)
            seed[i] = (uint8_t)(i + 1);
        hasher = merkle_hasher_new();
        signer = note_signer_from_seed("tagproof.local/log", seed);
        if (hasher == NULL || signer == NULL)
            abort();
    }
    struct proof_bundle *b =
        proof_bundle_parse((const char *)data, size, &not_json, err, sizeof(err));
    if (b == NULL) {
        /* A reason goes out in a problem+json answer: it must be UTF-8. */
        json_t *reason = json_string(err);
        if (err[0] == '\0' || not_json < 0 || reason == NULL)
            abort();
        json_decref(reason);
        return 0;
    }
    char *json = proof_bundle_json(b);
    if (json == NULL)
        abort();
    struct proof_bundle *again = proof_bundle_parse(json, strlen(json), NULL, err, sizeof(err));
    if (again == NULL) {
        fprintf(stderr, "written back, the bundle does not parse: %s\n%s\n", err, json);
        abort();
    }
    char *json2 = proof_bundle_json(again);
    if (json2 == NULL || strcmp(json, json2) != 0)
        abort();
    int failed = proof_bundle_check(hasher, b, note_signer_vkey(signer), checks);
    if (failed == 0 && b->leaf_index >= b->size)
        abort();
    for (int i = 0; i < PROOF_CHECK_COUNT; i++) {
        json_t *detail = json_string(checks[i].detail);
        if (detail == NULL)
            abort();
        json_decref(detail);
    }
    if (b->leaf_index < b->size &&
        (proof_plan_inclusion(hasher, b->leaf_index, b->size, &nodes) != 0 ||
         nodes.n >= PROOF_NODES_MAX))
        abort();
    free(json);
    free(json2);
    proof_bundle_free(again);
    proof_bundle_free(b);
    return 0;
}
