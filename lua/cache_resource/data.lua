--- `cache_data`: cached functions whose every caller gets its own copy of
-- the values (Streamlit's `st.cache_data`). The same object as
-- `require("cache_resource").data`; see `cache_resource.data` in the
-- reference.
-- @module cache_resource.data
return require("cache_resource").data
