/* The one list of methods (see method.h). A new method is one file of this
 * folder plus one line below (docs/adding-a-method.md). */
#include <string.h>

#include "core/core.h"
#include "methods/method.h"

extern const lwfm__method lwfm__method_lwfm_spm, lwfm__method_dn4, lwfm__method_mml,
    lwfm__method_rcn;

#define BUILT_IN 4
#define MAX_METHODS 16

static const lwfm__method *table[MAX_METHODS] = {
    &lwfm__method_lwfm_spm,
    &lwfm__method_dn4,
    &lwfm__method_mml,
    &lwfm__method_rcn,
};
static int n_methods = BUILT_IN;

const lwfm__method *lwfm__method_get(lwfm_method id) {
    for (int i = 0; i < n_methods; i++)
        if (table[i]->id == id) return table[i];
    return NULL;
}

const lwfm__method *lwfm__method_find(const char *name) {
    for (int i = 0; i < n_methods; i++)
        if (!strcmp(table[i]->name, name)) return table[i];
    return NULL;
}

int lwfm__method_offers(const lwfm__method *me, lwfm__pair_kind kind) {
    switch (kind) {
    case LWFM_PAIR_LWE:
        return me->lwe_pair != NULL;
    case LWFM_PAIR_SPM:
        return me->spm_pair != NULL;
    case LWFM_PAIR_RCN:
        return me->rcn_pair != NULL;
    }
    return 0;
}

const lwfm__method *lwfm__method_offering(lwfm__pair_kind kind) {
    for (int i = 0; i < n_methods; i++)
        if (lwfm__method_offers(table[i], kind)) return table[i];
    return NULL;
}

lwfm_status lwfm__method_register(const lwfm__method *me) {
    if (!me || !me->name || !me->layout || !me->bind || !me->prepare || !me->score)
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT,
                           "method: name, layout, bind, prepare and score needed");
    if (lwfm__method_get(me->id) || lwfm__method_find(me->name))
        return lwfm__error(LWFM_ERR_INVALID_ARGUMENT, "method '%s' or id %d is taken", me->name,
                           (int)me->id);
    if (n_methods == MAX_METHODS)
        return lwfm__error(LWFM_ERR_LIMIT, "method table is full (%d entries)", MAX_METHODS);
    table[n_methods++] = me;
    return LWFM_OK;
}
