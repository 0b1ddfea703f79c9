-- wrk script: bench/submit.lua's requests at a FIXED rate instead of a closed loop.
--
--   wrk -t1 -cN -dD -s bench/paced.lua URL -- post API_KEY AUDIO_URL EXTEND_AFTER LENGTH INTERVAL_MS
--
-- Everything as in bench/submit.lua (its body, its status counting, its `done`); INTERVAL_MS
-- is the time between two request starts of one wrk thread: rate = threads * 1000 / INTERVAL_MS.
-- Pacing: bench/pacing.lua (absolute start slots, so the arrival rate does not follow the
-- latency; a missed slot is dropped, not made up with a burst).
-- Used by bench/pipeline.sh with BENCH_RATE: does the pipeline keep up at that rate?

dofile("bench/submit.lua")

local pacing = dofile("bench/pacing.lua")
local interval
local submit_init = init

function init(args)
   interval = tonumber(args[6])
   assert(interval and interval > 0, "paced.lua: the 6th argument is INTERVAL_MS")
   submit_init(args)
end

delay = pacing.delay_fn(function() return interval end)
