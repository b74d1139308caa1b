/*
 * Device-state sections (lm_section_register): the source saves each
 * section's state in parts, while the guest runs and once it is stopped,
 * and sends them as SECTION frames on the main connection; the destination
 * hands each part to the section of the same name, and answers the
 * source's SWITCHOVER_QUERY with how many sections are not ready yet
 * (switchover-ack). docs/PROTOCOL.md, "Device-state sections".
 */
#ifndef LM_MIGRATION_SECTION_H
#define LM_MIGRATION_SECTION_H

#include <stdbool.h>

#include "migration/dest.h"
#include "migration/source.h"

/* Source: save_setup of every section, once per migration. */
int lm__src_sections_setup(lm_source *s);
/* Source, guest running: each section not done yet saves and sends its
 * next part; *all_done tells whether every section is done. */
int lm__src_sections_iterate(lm_source *s, bool *all_done);
/* Source, guest stopped: every section's complete part. */
int lm__src_sections_complete(lm_source *s);
/* Source: asks the destination, until it says every section is ready;
 * *ok true once it has. */
int lm__src_switchover_acked(lm_source *s, bool *ok);
/* Whether any section has iterative state (then a precopy that lost its
 * link cannot resume: a part may have been lost with it). */
bool lm__sections_iterative(const lm_ctx *ctx);

/* Destination: a SECTION frame (any state where the source may send one). */
int lm__dest_on_section(lm_dest *d, const lm_frame *f);
/* Destination: a SWITCHOVER_QUERY. */
int lm__dest_on_switchover_query(lm_dest *d, const lm_frame *f);
/* Destination, with the device state: every section registered here has
 * its complete part, or -EPROTO naming the first that has not. */
int lm__dest_sections_check_complete(lm_dest *d);

#endif
