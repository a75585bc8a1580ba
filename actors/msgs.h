/* Message types exchanged by the actors, one table of numbers. */
#ifndef ENS_ACTORS_MSGS_H
#define ENS_ACTORS_MSGS_H

enum act_msg_type {
    ACT_MSG_REPLY = 100, /* responder: answer an HTTP request */
    ACT_MSG_ENROLL,      /* user: subscribe or check-in */
    ACT_MSG_CALLBACK,    /* user: an Exchange SendNotification */
    ACT_MSG_PUSH,        /* push: send one notification */
    ACT_MSG_PUSH_RESULT, /* user: how a push went */
    ACT_MSG_HEALTH_DUE,  /* user: the health index says the subscription is due a look */
    ACT_MSG_TIMER_IDLE,  /* user: the work is done: passivate */
    ACT_MSG_INSPECT,     /* user: admin inspection of live state */
    ACT_MSG_DEVICE_OP,   /* user: unsubscribe, block, unblock or remove a device */
};

#endif
