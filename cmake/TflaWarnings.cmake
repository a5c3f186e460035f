# Warnings and sanitizers for every tfla target: tfla_target_defaults(<target>).
function(tfla_target_defaults target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wshadow -Wno-unused-parameter)
  if(TFLA_SANITIZE)
    target_compile_options(${target} PRIVATE -fsanitize=${TFLA_SANITIZE} -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=${TFLA_SANITIZE})
  endif()
endfunction()
