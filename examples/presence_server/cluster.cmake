# presence_server's cluster mode (cluster.h): included from the top-level
# CMakeLists.txt after the adapters, whose targets it links. Without Kafka the
# server builds all the same and --role says what is missing.
if(PRESENCE_BUILD_KAFKA)
  target_link_libraries(presence_server_lib PUBLIC presence_kafka)
  target_compile_definitions(presence_server_lib PRIVATE PRESENCE_SERVER_KAFKA)
  if(PRESENCE_BUILD_REDIS)
    target_link_libraries(presence_server_lib PUBLIC presence_redis)
    target_compile_definitions(presence_server_lib PRIVATE PRESENCE_SERVER_REDIS)
  endif()
  if(PRESENCE_BUILD_POSTGRES)
    target_link_libraries(presence_server_lib PUBLIC presence_postgres)
    target_compile_definitions(presence_server_lib PRIVATE PRESENCE_SERVER_POSTGRES)
  endif()
  # librdkafka's mock cluster in a process of its own, for a cluster on one
  # machine without a broker (README, "Running a cluster"; the cluster test).
  add_executable(presence_mock_kafka ${CMAKE_CURRENT_LIST_DIR}/mock_kafka_main.cc)
  target_link_libraries(presence_mock_kafka PRIVATE presence_kafka presence_internal PkgConfig::RDKAFKA)
  target_include_directories(presence_mock_kafka PRIVATE ${PROJECT_SOURCE_DIR})
  target_compile_options(presence_mock_kafka PRIVATE -Wall -Wextra)
endif()

# The cluster test: the mock cluster, a real redis-server, 2 gateway and 3
# engine processes, 2,000 WebSocket clients, 20 repetitions of a SIGKILL and
# a SIGTERM (about 5 minutes; a repetition takes 12 to 14 s), and a stop
# without a broker.
# A soak: PRESENCE_CLUSTER_REPS=200 build/examples/presence_server/presence_cluster_test
if(PRESENCE_BUILD_KAFKA AND PRESENCE_BUILD_REDIS AND PRESENCE_BUILD_TESTS)
  find_package(Boost 1.74 REQUIRED)
  find_package(Threads REQUIRED)
  find_package(GTest REQUIRED)
  add_executable(presence_cluster_test ${CMAKE_CURRENT_LIST_DIR}/cluster_test.cc)
  set_target_properties(presence_cluster_test PROPERTIES RUNTIME_OUTPUT_DIRECTORY
    ${CMAKE_BINARY_DIR}/examples/presence_server)
  target_include_directories(presence_cluster_test PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_libraries(presence_cluster_test PRIVATE presence_test_servers Boost::headers Threads::Threads
    absl::strings GTest::gtest GTest::gtest_main)
  target_compile_options(presence_cluster_test PRIVATE -Wall -Wextra)
  target_compile_definitions(presence_cluster_test PRIVATE
    PRESENCE_SERVER_BINARY="$<TARGET_FILE:presence_server>"
    PRESENCE_MOCK_KAFKA="$<TARGET_FILE:presence_mock_kafka>"
    PRESENCE_CTL="${CMAKE_BINARY_DIR}/examples/presence_server/presencectl")
  add_dependencies(presence_cluster_test presence_server presence_mock_kafka)
  if(PRESENCE_BUILD_POSTGRES)  # overrides and history through a gateway, on PostgreSQL
    target_compile_definitions(presence_cluster_test PRIVATE PRESENCE_CLUSTER_POSTGRES)
  endif()
  add_test(NAME presence_cluster_test COMMAND presence_cluster_test)
  set_tests_properties(presence_cluster_test PROPERTIES LABELS "cluster;server" TIMEOUT 1200
    RESOURCE_LOCK failover_timing)
endif()
