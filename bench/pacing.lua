-- Shared by the fixed-rate wrk scripts (bench/submit_overhead.lua, bench/paced.lua): a
-- monotonic clock, and wrk's delay() handing out absolute start slots INTERVAL_MS apart.
--
-- wrk has no -R: before every request it calls `delay()` and waits that many milliseconds (an
-- integer: wrk truncates). Every thread hands out absolute start slots next, next + INTERVAL_MS,
-- ... (LuaJIT FFI clock_gettime(CLOCK_MONOTONIC)) to whichever of its connections is free: the
-- arrival rate is fixed and does not drift with the latency (it is not a closed loop). A slot
-- missed by more than one interval (all connections busy, or the thread was not scheduled) is
-- dropped, not made up with a burst.

local ffi = require("ffi")
pcall(ffi.cdef, [[
typedef struct { long tv_sec; long tv_nsec; } segue_bench_timespec;
int clock_gettime(int clk_id, segue_bench_timespec *tp);
]])
local ts = ffi.new("segue_bench_timespec")

local pacing = {}

function pacing.now_ms()
   ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
   return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

function pacing.now_us()
   ffi.C.clock_gettime(1, ts)
   return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

-- A delay() for one wrk thread; `interval` is a function returning INTERVAL_MS (known only once
-- the thread's init() has read its arguments).
function pacing.delay_fn(interval)
   local next_slot
   return function()
      local step = interval()
      local t = pacing.now_ms()
      if next_slot == nil or next_slot < t - step then
         next_slot = t
      end
      local d = next_slot - t
      next_slot = next_slot + step
      if d < 0 then
         d = 0
      end
      return d
   end
end

return pacing
