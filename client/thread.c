/* thread.c — the optional helper thread: waits on the handle's descriptor and steps it. */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

/* Every public call takes the handle's (recursive) mutex, so once this thread runs the app may
 * call in from any thread; the thread holds the mutex only inside rbc_step. */
static void *loop(void *arg)
{
    struct rbc *c = arg;
    struct pollfd p[2] = {{.fd = c->epfd, .events = POLLIN}, {.fd = c->wakefd, .events = POLLIN}};
    for (;;) {
        int n = poll(p, 2, -1); /* the timer is inside the epoll descriptor: no timeout needed */
        if (n < 0 && errno != EINTR)
            break;
        if (n > 0 && p[1].revents)
            break;
        if (n > 0)
            rbc_step(c);
    }
    return NULL;
}

int rbc_thread_start(struct rbc *c)
{
    pthread_mutex_lock(&c->mu);
    int r = 0;
    if (c->thread_on) {
        r = -EALREADY;
    } else if ((c->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        r = -errno;
    } else if ((r = -pthread_create(&c->thread, NULL, loop, c)) < 0) {
        close(c->wakefd);
        c->wakefd = -1;
    } else {
        c->thread_on = true;
    }
    pthread_mutex_unlock(&c->mu);
    return r;
}

int rbc_thread_stop(struct rbc *c)
{
    pthread_mutex_lock(&c->mu);
    if (!c->thread_on) {
        pthread_mutex_unlock(&c->mu);
        return -EINVAL;
    }
    if (pthread_equal(pthread_self(), c->thread)) {
        pthread_mutex_unlock(&c->mu);
        return -EDEADLK; /* from a callback on the helper thread itself */
    }
    c->thread_on = false;
    uint64_t one = 1;
    ssize_t w = write(c->wakefd, &one, sizeof(one));
    (void)w; /* an eventfd write of 1 cannot fail short of overflow */
    pthread_t t = c->thread;
    pthread_mutex_unlock(&c->mu);
    pthread_join(t, NULL);
    close(c->wakefd);
    c->wakefd = -1;
    return 0;
}
