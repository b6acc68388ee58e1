-- wrk script: POST /predict with a JSON body, cycling over 10,000 distinct (date, store, item) rows.
-- Every thread builds the same pseudo-random list (fixed seed), and starts at a different offset.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local bodies = {}
local index = 0

function setup(thread)
  thread:set("offset", math.random(0, 9999))
end

function init(args)
  math.randomseed(42)
  for n = 1, 10000 do
    local day = math.random(1, 28)
    local month = math.random(1, 12)
    local year = math.random(2017, 2018)
    bodies[n] = string.format('{"date": "%04d-%02d-%02d", "store": %d, "item": %d}',
      year, month, day, math.random(1, 10), math.random(1, 50))
  end
  index = offset or 0
end

function request()
  index = index % #bodies + 1
  return wrk.format(nil, "/predict", nil, bodies[index])
end

-- Count non-2xx answers by status, so a run that "succeeds" with errors is visible.
local statuses = {}
function response(status, headers, body)
  if status ~= 200 then statuses[status] = (statuses[status] or 0) + 1 end
end
