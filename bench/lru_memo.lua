-- A least-recently-used memo as a user writes one, the baseline of the
-- miss rows (bench.lua, callgrind_miss.lua): a table from key to node, and
-- the nodes in a doubly linked list closed into a ring by a sentinel
-- (ring.next is the most recently used node, ring.prev the least), so no
-- end needs a nil check. A hit moves its node to the front; a miss at
-- capacity unlinks the last node and forgets its key, and links a new node
-- in front: after that (add_first) or before (as lua-lru does). Each order
-- has its own capacity where its key table rehashes over and over, so both
-- are measured.
return function(fn, capacity, add_first)
  local nodes, count = {}, 0
  local ring = {}
  ring.next, ring.prev = ring, ring
  return function(k)
    local node = nodes[k]
    if node then
      if ring.next ~= node then
        local before, after = node.prev, node.next
        before.next = after; after.prev = before
        node.prev, node.next = ring, ring.next
        ring.next.prev = node; ring.next = node
      end
      return node.value
    end
    local v = fn(k)
    -- written out twice, as a user writes either shape: a shared helper
    -- would add a call to the baseline's every miss
    if add_first then
      node = { key = k, value = v, prev = ring, next = ring.next }
      ring.next.prev = node; ring.next = node
      nodes[k] = node
      if count == capacity then
        local last = ring.prev
        ring.prev = last.prev; last.prev.next = ring
        nodes[last.key] = nil
      else
        count = count + 1
      end
      return v
    end
    if count == capacity then
      local last = ring.prev
      ring.prev = last.prev; last.prev.next = ring
      nodes[last.key] = nil
    else
      count = count + 1
    end
    node = { key = k, value = v, prev = ring, next = ring.next }
    ring.next.prev = node; ring.next = node
    nodes[k] = node
    return v
  end
end
