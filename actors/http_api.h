/* Request handlers of the two listeners. Both run on the loop that accepted
 * the connection, with |ud| the scheduler's struct ens_sched_ctx. */
#ifndef ENS_ACTORS_HTTP_API_H
#define ENS_ACTORS_HTTP_API_H

struct h1_req;

/* act_http_public serves the device API and the Exchange callback (API.md 1, 2). */
void act_http_public(struct h1_req *req, void *ud);

/* act_http_admin serves the admin API (API.md 4). */
void act_http_admin(struct h1_req *req, void *ud);

#endif
