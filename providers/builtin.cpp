// The list of shipped providers: one line per provider folder.

#include "providers/builtin.hpp"

#include "providers/musicapi/musicapi.hpp"
#include "providers/musicgpt/musicgpt.hpp"
#include "providers/sandbox/sandbox.hpp"

namespace segue::providers {

const descriptor_list& builtin() {
    static const descriptor_list list = {
        &sandbox::provider_descriptor(),
        &musicgpt::provider_descriptor(),
        &musicapi::provider_descriptor(),
    };
    return list;
}

}  // namespace segue::providers
