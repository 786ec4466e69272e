-- Argo CD health check for serving.lms.dev/LargeModelService (Lua 5.1, as Argo CD runs it).
-- Maps the operator's status.phase and conditions to Healthy, Progressing, Degraded, Missing
-- or Unknown. A status older than the spec (observedGeneration < generation) is Progressing:
-- the operator has not looked at the change yet, so the old phase says nothing about it.
local hs = {}

local function condition(status, kind)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function with_reason(text, c)
  if c ~= nil and c.message ~= nil and c.message ~= "" then
    return text .. ": " .. c.message
  end
  return text
end

if obj == nil then
  hs.status = "Missing"
  hs.message = "LargeModelService not found"
  return hs
end

local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a phase"
  return hs
end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local phase = status.phase
local message = status.message or ""
local ready = condition(status, "Ready")
local serving = condition(status, "ServingReady")

if phase == "Ready" then
  if ready ~= nil and ready.status == "False" then
    hs.status = "Degraded"
    hs.message = with_reason("Phase Ready but the Ready condition is False", ready)
  elseif serving ~= nil and serving.status == "False" then
    hs.status = "Degraded"
    hs.message = with_reason("Phase Ready but serving is not ready", serving)
  else
    hs.status = "Healthy"
    hs.message = message ~= "" and message or "Serving"
  end
elseif phase == "Pending" or phase == "Compressing" or phase == "Deploying" then
  hs.status = "Progressing"
  hs.message = phase .. (message ~= "" and (": " .. message) or "")
elseif phase == "Degraded" then
  hs.status = "Degraded"
  hs.message = message ~= "" and message or "Degraded"
elseif phase == "Failed" then
  hs.status = "Degraded"
  if message ~= "" then
    hs.message = "Failed: " .. message
  else
    hs.message = with_reason("Failed", ready)
  end
else
  hs.status = "Unknown"
  hs.message = "Unknown phase " .. tostring(phase)
end
return hs
